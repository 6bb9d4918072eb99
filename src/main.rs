//! The `cloudpop` command: `serve`, `account ...`, `deliver`, `import`, `check` and
//! `admin ...`; each command group is a file of [`cli`].

mod cli;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match cli::run(cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line that says what is wrong, whatever RUST_BACKTRACE says: a configuration
            // mistake is not a crash.
            eprintln!("cloudpop: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
