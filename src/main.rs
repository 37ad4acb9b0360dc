use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    docket::cli::run().await
}
