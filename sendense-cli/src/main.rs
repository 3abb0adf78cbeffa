fn main() -> std::process::ExitCode {
    sendense_cli::main()
}
