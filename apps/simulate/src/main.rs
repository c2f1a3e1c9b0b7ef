//! `simulate`: replay a CI job trace against the provisioner's policy.

mod cli;
mod headless;
mod report;
mod tui;

fn main() -> std::process::ExitCode {
    let args = <cli::Args as clap::Parser>::parse();
    if let Some(path) = &args.report {
        return report::main(&args, path);
    }
    if args.headless || args.bench {
        return headless::main(&args);
    }
    tui::main(&args)
}
