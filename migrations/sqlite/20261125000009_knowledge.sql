-- Knowledge base: collections of documents, split into chunks that are searched lexically (FTS5,
-- BM25) and by vector similarity.
CREATE TABLE collections (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL,
    name              TEXT NOT NULL,
    description       TEXT NOT NULL,
    -- Bumped whenever vectors change, so in-process vector indexes know to reload.
    vectors_version   INTEGER NOT NULL DEFAULT 0,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE UNIQUE INDEX collections_name ON collections (tenant_id, name);

CREATE TABLE documents (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    collection_id  TEXT NOT NULL REFERENCES collections (id),
    title          TEXT NOT NULL,
    content_type   TEXT NOT NULL,
    size_bytes     INTEGER NOT NULL,
    sha256         TEXT NOT NULL,
    object_key     TEXT NOT NULL,
    metadata       TEXT NOT NULL,
    status         TEXT NOT NULL,
    error          TEXT,
    chunk_count    INTEGER NOT NULL DEFAULT 0,
    job_id         TEXT,
    created_by     TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    indexed_at     TEXT
);
CREATE UNIQUE INDEX documents_content ON documents (collection_id, sha256);
CREATE INDEX documents_collection ON documents (tenant_id, collection_id, id);

CREATE TABLE chunks (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    collection_id  TEXT NOT NULL,
    document_id    TEXT NOT NULL REFERENCES documents (id),
    position       INTEGER NOT NULL,
    heading        TEXT,
    text           TEXT NOT NULL,
    token_count    INTEGER NOT NULL,
    embedding      BLOB
);
CREATE INDEX chunks_document ON chunks (document_id, position);
CREATE INDEX chunks_collection ON chunks (tenant_id, collection_id);

-- Full-text index of chunks (BM25 ranking via bm25()); rows are written alongside `chunks`.
CREATE VIRTUAL TABLE chunks_fts USING fts5(
    chunk_id UNINDEXED,
    tenant_id UNINDEXED,
    collection_id UNINDEXED,
    heading,
    text,
    tokenize = 'porter unicode61'
);
