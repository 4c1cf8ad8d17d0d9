//! The `edgecron` binary: parse the command line, run the command, turn its outcome into an
//! exit code once.

use std::process::ExitCode;

fn main() -> ExitCode {
    let format = match edgecron::logging::LogFormat::from_env() {
        Ok(format) => format,
        Err(message) => {
            eprintln!("edgecron: {message}");
            return ExitCode::from(2);
        }
    };
    edgecron::logging::init(format);
    let cli = <edgecron::cli::Cli as clap::Parser>::parse();
    match edgecron::cli::execute(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("edgecron: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
