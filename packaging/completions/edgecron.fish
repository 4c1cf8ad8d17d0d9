# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_edgecron_global_optspecs
    string join \n h/help V/version
end

function __fish_edgecron_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_edgecron_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_edgecron_using_subcommand
    set -l cmd (__fish_edgecron_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c edgecron -n "__fish_edgecron_needs_command" -s h -l help -d 'Print help'
complete -c edgecron -n "__fish_edgecron_needs_command" -s V -l version -d 'Print version'
complete -c edgecron -n "__fish_edgecron_needs_command" -f -a "serve" -d 'Migrate the store, start the HTTP listener and the scheduler; stop on SIGTERM/SIGINT'
complete -c edgecron -n "__fish_edgecron_needs_command" -f -a "run" -d 'Run one job once and print its JSON result'
complete -c edgecron -n "__fish_edgecron_needs_command" -f -a "erase" -d 'Erase one data subject everywhere edgecron holds them, exports included'
complete -c edgecron -n "__fish_edgecron_needs_command" -f -a "access" -d 'Print every record of one data subject in edgecron\'s tables and exports, as JSON'
complete -c edgecron -n "__fish_edgecron_needs_command" -f -a "jobs" -d 'List every job: schedule, enabled, last run, next run'
complete -c edgecron -n "__fish_edgecron_needs_command" -f -a "runs" -d 'Show run history, newest first'
complete -c edgecron -n "__fish_edgecron_needs_command" -f -a "occurrences" -d 'Show every fire time that was due and what became of it, newest first'
complete -c edgecron -n "__fish_edgecron_needs_command" -f -a "check" -d 'Validate the configuration without opening the store, and print each job\'s plan'
complete -c edgecron -n "__fish_edgecron_needs_command" -f -a "calendar" -d 'Show the next times a cron expression fires, like `systemd-analyze calendar`'
complete -c edgecron -n "__fish_edgecron_needs_command" -f -a "migrate" -d 'Create or upgrade the store\'s schema'
complete -c edgecron -n "__fish_edgecron_needs_command" -f -a "demo" -d 'Fill the store with deterministic sample data for every job'
complete -c edgecron -n "__fish_edgecron_needs_command" -f -a "site" -d 'Print this store\'s site id; `adopt`: make a store copied or moved here this host\'s own'
complete -c edgecron -n "__fish_edgecron_needs_command" -f -a "backup" -d 'Copy the store, consistent, while serve and the application write; never overwrites'
complete -c edgecron -n "__fish_edgecron_needs_command" -f -a "restore" -d 'Put a copy made by `backup` in place of the store (serve stopped), keeping the replaced one beside it, and take the export files written since into its manifest'
complete -c edgecron -n "__fish_edgecron_needs_command" -f -a "completions" -d 'Print the shell completion script for SHELL'
complete -c edgecron -n "__fish_edgecron_needs_command" -f -a "man" -d 'Print the man page (roff)'
complete -c edgecron -n "__fish_edgecron_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c edgecron -n "__fish_edgecron_using_subcommand serve" -s h -l help -d 'Print help'
complete -c edgecron -n "__fish_edgecron_using_subcommand run" -l start-date -r
complete -c edgecron -n "__fish_edgecron_using_subcommand run" -l end-date -r
complete -c edgecron -n "__fish_edgecron_using_subcommand run" -l dry-run
complete -c edgecron -n "__fish_edgecron_using_subcommand run" -s h -l help -d 'Print help'
complete -c edgecron -n "__fish_edgecron_using_subcommand erase" -l tenant -r
complete -c edgecron -n "__fish_edgecron_using_subcommand erase" -l customer -r
complete -c edgecron -n "__fish_edgecron_using_subcommand erase" -l dry-run
complete -c edgecron -n "__fish_edgecron_using_subcommand erase" -s h -l help -d 'Print help'
complete -c edgecron -n "__fish_edgecron_using_subcommand access" -l tenant -r
complete -c edgecron -n "__fish_edgecron_using_subcommand access" -l customer -r
complete -c edgecron -n "__fish_edgecron_using_subcommand access" -s h -l help -d 'Print help'
complete -c edgecron -n "__fish_edgecron_using_subcommand jobs" -l json
complete -c edgecron -n "__fish_edgecron_using_subcommand jobs" -s h -l help -d 'Print help'
complete -c edgecron -n "__fish_edgecron_using_subcommand runs" -l limit -r
complete -c edgecron -n "__fish_edgecron_using_subcommand runs" -l json
complete -c edgecron -n "__fish_edgecron_using_subcommand runs" -s h -l help -d 'Print help'
complete -c edgecron -n "__fish_edgecron_using_subcommand occurrences" -l limit -r
complete -c edgecron -n "__fish_edgecron_using_subcommand occurrences" -l json
complete -c edgecron -n "__fish_edgecron_using_subcommand occurrences" -s h -l help -d 'Print help'
complete -c edgecron -n "__fish_edgecron_using_subcommand check" -l variables -d 'List every environment variable edgecron reads instead: its default, the values it accepts, whether it is set here, and what it does'
complete -c edgecron -n "__fish_edgecron_using_subcommand check" -l json
complete -c edgecron -n "__fish_edgecron_using_subcommand check" -s h -l help -d 'Print help'
complete -c edgecron -n "__fish_edgecron_using_subcommand calendar" -l tz -d 'Time zone the expression is read in (default: EDGECRON_TZ, else UTC)' -r
complete -c edgecron -n "__fish_edgecron_using_subcommand calendar" -l from -d 'Start after this time (ISO-8601; without an offset it is read in the zone)' -r
complete -c edgecron -n "__fish_edgecron_using_subcommand calendar" -l count -d 'How many fire times to show, 1 to 10,000' -r
complete -c edgecron -n "__fish_edgecron_using_subcommand calendar" -l json
complete -c edgecron -n "__fish_edgecron_using_subcommand calendar" -s h -l help -d 'Print help'
complete -c edgecron -n "__fish_edgecron_using_subcommand migrate" -s h -l help -d 'Print help'
complete -c edgecron -n "__fish_edgecron_using_subcommand demo" -l tenants -r
complete -c edgecron -n "__fish_edgecron_using_subcommand demo" -l rows -r
complete -c edgecron -n "__fish_edgecron_using_subcommand demo" -s h -l help -d 'Print help'
complete -c edgecron -n "__fish_edgecron_using_subcommand site; and not __fish_seen_subcommand_from adopt help" -s h -l help -d 'Print help'
complete -c edgecron -n "__fish_edgecron_using_subcommand site; and not __fish_seen_subcommand_from adopt help" -f -a "adopt" -d 'Record this host (and EDGECRON_SITE_ID, or a new derived id) as the store\'s site'
complete -c edgecron -n "__fish_edgecron_using_subcommand site; and not __fish_seen_subcommand_from adopt help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c edgecron -n "__fish_edgecron_using_subcommand site; and __fish_seen_subcommand_from adopt" -s h -l help -d 'Print help'
complete -c edgecron -n "__fish_edgecron_using_subcommand site; and __fish_seen_subcommand_from help" -f -a "adopt" -d 'Record this host (and EDGECRON_SITE_ID, or a new derived id) as the store\'s site'
complete -c edgecron -n "__fish_edgecron_using_subcommand site; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c edgecron -n "__fish_edgecron_using_subcommand backup" -s h -l help -d 'Print help'
complete -c edgecron -n "__fish_edgecron_using_subcommand restore" -s h -l help -d 'Print help'
complete -c edgecron -n "__fish_edgecron_using_subcommand completions" -s h -l help -d 'Print help'
complete -c edgecron -n "__fish_edgecron_using_subcommand man" -s h -l help -d 'Print help'
complete -c edgecron -n "__fish_edgecron_using_subcommand help; and not __fish_seen_subcommand_from serve run erase access jobs runs occurrences check calendar migrate demo site backup restore completions man help" -f -a "serve" -d 'Migrate the store, start the HTTP listener and the scheduler; stop on SIGTERM/SIGINT'
complete -c edgecron -n "__fish_edgecron_using_subcommand help; and not __fish_seen_subcommand_from serve run erase access jobs runs occurrences check calendar migrate demo site backup restore completions man help" -f -a "run" -d 'Run one job once and print its JSON result'
complete -c edgecron -n "__fish_edgecron_using_subcommand help; and not __fish_seen_subcommand_from serve run erase access jobs runs occurrences check calendar migrate demo site backup restore completions man help" -f -a "erase" -d 'Erase one data subject everywhere edgecron holds them, exports included'
complete -c edgecron -n "__fish_edgecron_using_subcommand help; and not __fish_seen_subcommand_from serve run erase access jobs runs occurrences check calendar migrate demo site backup restore completions man help" -f -a "access" -d 'Print every record of one data subject in edgecron\'s tables and exports, as JSON'
complete -c edgecron -n "__fish_edgecron_using_subcommand help; and not __fish_seen_subcommand_from serve run erase access jobs runs occurrences check calendar migrate demo site backup restore completions man help" -f -a "jobs" -d 'List every job: schedule, enabled, last run, next run'
complete -c edgecron -n "__fish_edgecron_using_subcommand help; and not __fish_seen_subcommand_from serve run erase access jobs runs occurrences check calendar migrate demo site backup restore completions man help" -f -a "runs" -d 'Show run history, newest first'
complete -c edgecron -n "__fish_edgecron_using_subcommand help; and not __fish_seen_subcommand_from serve run erase access jobs runs occurrences check calendar migrate demo site backup restore completions man help" -f -a "occurrences" -d 'Show every fire time that was due and what became of it, newest first'
complete -c edgecron -n "__fish_edgecron_using_subcommand help; and not __fish_seen_subcommand_from serve run erase access jobs runs occurrences check calendar migrate demo site backup restore completions man help" -f -a "check" -d 'Validate the configuration without opening the store, and print each job\'s plan'
complete -c edgecron -n "__fish_edgecron_using_subcommand help; and not __fish_seen_subcommand_from serve run erase access jobs runs occurrences check calendar migrate demo site backup restore completions man help" -f -a "calendar" -d 'Show the next times a cron expression fires, like `systemd-analyze calendar`'
complete -c edgecron -n "__fish_edgecron_using_subcommand help; and not __fish_seen_subcommand_from serve run erase access jobs runs occurrences check calendar migrate demo site backup restore completions man help" -f -a "migrate" -d 'Create or upgrade the store\'s schema'
complete -c edgecron -n "__fish_edgecron_using_subcommand help; and not __fish_seen_subcommand_from serve run erase access jobs runs occurrences check calendar migrate demo site backup restore completions man help" -f -a "demo" -d 'Fill the store with deterministic sample data for every job'
complete -c edgecron -n "__fish_edgecron_using_subcommand help; and not __fish_seen_subcommand_from serve run erase access jobs runs occurrences check calendar migrate demo site backup restore completions man help" -f -a "site" -d 'Print this store\'s site id; `adopt`: make a store copied or moved here this host\'s own'
complete -c edgecron -n "__fish_edgecron_using_subcommand help; and not __fish_seen_subcommand_from serve run erase access jobs runs occurrences check calendar migrate demo site backup restore completions man help" -f -a "backup" -d 'Copy the store, consistent, while serve and the application write; never overwrites'
complete -c edgecron -n "__fish_edgecron_using_subcommand help; and not __fish_seen_subcommand_from serve run erase access jobs runs occurrences check calendar migrate demo site backup restore completions man help" -f -a "restore" -d 'Put a copy made by `backup` in place of the store (serve stopped), keeping the replaced one beside it, and take the export files written since into its manifest'
complete -c edgecron -n "__fish_edgecron_using_subcommand help; and not __fish_seen_subcommand_from serve run erase access jobs runs occurrences check calendar migrate demo site backup restore completions man help" -f -a "completions" -d 'Print the shell completion script for SHELL'
complete -c edgecron -n "__fish_edgecron_using_subcommand help; and not __fish_seen_subcommand_from serve run erase access jobs runs occurrences check calendar migrate demo site backup restore completions man help" -f -a "man" -d 'Print the man page (roff)'
complete -c edgecron -n "__fish_edgecron_using_subcommand help; and not __fish_seen_subcommand_from serve run erase access jobs runs occurrences check calendar migrate demo site backup restore completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c edgecron -n "__fish_edgecron_using_subcommand help; and __fish_seen_subcommand_from site" -f -a "adopt" -d 'Record this host (and EDGECRON_SITE_ID, or a new derived id) as the store\'s site'
