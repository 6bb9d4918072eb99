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
            // mistake is not a crash. A cause is added unless the message already quotes it.
            let mut line = e.to_string();
            for cause in e.chain().skip(1).map(ToString::to_string) {
                if !line.contains(&cause) {
                    line = format!("{line}: {cause}");
                }
            }
            eprintln!("cloudpop: {line}");
            std::process::ExitCode::FAILURE
        }
    }
}
