//! What both binaries' `--help` must hold: a description for every option and argument,
//! checked by a test of each binary's clap tree.

/// The options and arguments (as `PROGRAM SUBCOMMAND… ID`) that `--help` shows without a
/// description, in `command` and every subcommand below it.
pub fn undescribed_arguments(command: &clap::Command) -> Vec<String> {
    fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for argument in command.get_arguments() {
            let id = argument.get_id().as_str();
            if matches!(id, "help" | "version") || argument.is_hide_set() {
                continue;
            }
            if argument.get_help().is_none() && argument.get_long_help().is_none() {
                missing.push(format!("{path} {id}"));
            }
        }
        for sub in command.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    walk(command, command.get_name(), &mut missing);
    missing
}
