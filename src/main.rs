//! The `forkhorn` command; everything it does is in the library (`server`).

fn main() -> std::process::ExitCode {
    forkhorn::server::main()
}
