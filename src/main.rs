fn main() -> std::process::ExitCode {
    shelldone::cli::main()
}
