-- Why a document's chunks have no embeddings although it is indexed (searchable lexically), e.g. a
-- chat-only provider with no /embeddings; NULL when they have them or none are configured.
ALTER TABLE documents ADD COLUMN embedding_error TEXT;
