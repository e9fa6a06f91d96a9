//! `group-loader`: see the library crate. This file only hands the process arguments to it.

fn main() -> std::process::ExitCode {
    group_loader::cli::main_with_args(std::env::args_os())
}
