//! `simulate`: replay a CI job trace against the provisioner's policy.

mod advise;
mod bench;
mod cli;
mod compare;
mod controls;
mod format;
mod headless;
mod report;
mod setup;
mod sweep;
mod tui;

fn main() -> std::process::ExitCode {
    let args = <cli::Args as clap::Parser>::parse();
    if let Some(cli::Command::Advise(advise)) = &args.command {
        return advise::main(&args, advise);
    }
    if args.calibration {
        return setup::exit_code(headless::calibration(&args));
    }
    if let Some(path) = &args.report {
        return report::main(&args, path);
    }
    if !(args.headless || args.bench) {
        return tui::main(&args);
    }
    setup::exit_code(if args.bench {
        bench::main(&args)
    } else if args.sweep.is_empty() {
        headless::main(&args)
    } else {
        sweep::main(&args)
    })
}
