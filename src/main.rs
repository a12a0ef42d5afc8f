//! `precursor`: one binary for operators and clients (DESIGN.md §7). It never links DPDK:
//! `precursor dataplane` starts the `precursor-dataplane` binary installed beside it.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let command = cli::Cli::parse();
    match cli::run(command) {
        Ok(code) => code,
        Err(error) => {
            // One line for people: the chain of causes, no debug output.
            let mut message = error.to_string();
            for cause in error.chain().skip(1) {
                // Many messages already end with their source: say each cause once.
                let cause = cause.to_string();
                if !message.contains(&cause) {
                    message.push_str(": ");
                    message.push_str(&cause);
                }
            }
            eprintln!("precursor: {message}");
            ExitCode::FAILURE
        }
    }
}
