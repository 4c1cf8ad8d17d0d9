//! The `edgecron` binary: parse the command line, run the command, turn its outcome into an
//! exit code once.

use std::process::ExitCode;

fn main() -> ExitCode {
    if let Err(error) = edgecron::cli::start_logging() {
        eprintln!("edgecron: {error}");
        return ExitCode::from(error.exit_code());
    }
    let cli = <edgecron::cli::Cli as clap::Parser>::parse();
    match edgecron::cli::execute(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("edgecron: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
