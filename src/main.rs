//! The `edgecron` binary: parse the command line, run the command, turn its outcome into an
//! exit code once.

use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let cli = <edgecron::cli::Cli as clap::Parser>::parse();
    match edgecron::cli::execute(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("edgecron: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
