//! TLS for outgoing HTTPS (object store, HTTP and LLM tools) uses rustls with the ring provider,
//! which must be installed once per process before any HTTP client is built.

/// Installs the provider; later calls (tests start many servers in one process) do nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
