//! `simulate`: replay a CI job trace against the provisioner's policy.

mod cli;
mod headless;

fn main() -> std::process::ExitCode {
    let args = <cli::Args as clap::Parser>::parse();
    if args.headless || args.bench {
        return headless::main(&args);
    }
    eprintln!("the interactive TUI is not available yet; use --headless");
    std::process::ExitCode::from(2)
}
