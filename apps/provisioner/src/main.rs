//! `provisioner`: the controller binary. Parsing and dispatch live in the library so the
//! integration tests drive the same code.

fn main() -> std::process::ExitCode {
    provisioner::main()
}
