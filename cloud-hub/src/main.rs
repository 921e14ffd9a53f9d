//! `cloud-hub`: see the library docs. The command line lives in [`cloud_hub::cli`].

fn main() -> std::process::ExitCode {
    cloud_hub::cli::main()
}
