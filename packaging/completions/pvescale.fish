# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_pvescale_global_optspecs
    string join \n c/config= v/verbose q/quiet h/help V/version
end

function __fish_pvescale_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_pvescale_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_pvescale_using_subcommand
    set -l cmd (__fish_pvescale_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c pvescale -n "__fish_pvescale_needs_command" -s c -l config -d 'Config file [default: $PVESCALE_CONFIG, else /etc/pvescale/pvescale.toml as root, else ~/.config/pvescale/pvescale.toml]' -r -F
complete -c pvescale -n "__fish_pvescale_needs_command" -s v -l verbose -d 'More detail on stderr (repeat for more)'
complete -c pvescale -n "__fish_pvescale_needs_command" -s q -l quiet -d 'Print nothing unless something changed or failed'
complete -c pvescale -n "__fish_pvescale_needs_command" -s h -l help -d 'Print help'
complete -c pvescale -n "__fish_pvescale_needs_command" -s V -l version -d 'Print version'
complete -c pvescale -n "__fish_pvescale_needs_command" -f -a "run" -d 'Evaluate and scale every managed VM once, then exit (run this from a timer)'
complete -c pvescale -n "__fish_pvescale_needs_command" -f -a "status" -d 'Show every managed VM: size, utilisation, readiness, and what the next run would do'
complete -c pvescale -n "__fish_pvescale_needs_command" -f -a "check" -d 'Check config, connection, credentials, privileges and each VM\'s readiness'
complete -c pvescale -n "__fish_pvescale_needs_command" -f -a "history" -d 'Show what runs did: every change, refusal and failure, oldest first'
complete -c pvescale -n "__fish_pvescale_needs_command" -f -a "recommend" -d 'Recommend vCPUs and memory per VM from the history Proxmox keeps (changes nothing)'
complete -c pvescale -n "__fish_pvescale_needs_command" -f -a "simulate" -d 'Replay the history through the scaling policy: what pvescale would have done'
complete -c pvescale -n "__fish_pvescale_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pvescale -n "__fish_pvescale_using_subcommand run" -s o -l output -d 'Output format of the summary' -r -f -a "table\t''
json\t''"
complete -c pvescale -n "__fish_pvescale_using_subcommand run" -s c -l config -d 'Config file [default: $PVESCALE_CONFIG, else /etc/pvescale/pvescale.toml as root, else ~/.config/pvescale/pvescale.toml]' -r -F
complete -c pvescale -n "__fish_pvescale_using_subcommand run" -s n -l dry-run -d 'Read and decide, print the plan with reasons; change nothing and write no state'
complete -c pvescale -n "__fish_pvescale_using_subcommand run" -s v -l verbose -d 'More detail on stderr (repeat for more)'
complete -c pvescale -n "__fish_pvescale_using_subcommand run" -s q -l quiet -d 'Print nothing unless something changed or failed'
complete -c pvescale -n "__fish_pvescale_using_subcommand run" -s h -l help -d 'Print help'
complete -c pvescale -n "__fish_pvescale_using_subcommand status" -s o -l output -d 'Output format' -r -f -a "table\t''
json\t''"
complete -c pvescale -n "__fish_pvescale_using_subcommand status" -s c -l config -d 'Config file [default: $PVESCALE_CONFIG, else /etc/pvescale/pvescale.toml as root, else ~/.config/pvescale/pvescale.toml]' -r -F
complete -c pvescale -n "__fish_pvescale_using_subcommand status" -l refresh -d 'Read every running VM\'s config and pending changes, not only those whose config earlier runs have not learned recently (more requests, the whole truth)'
complete -c pvescale -n "__fish_pvescale_using_subcommand status" -s v -l verbose -d 'More detail on stderr (repeat for more)'
complete -c pvescale -n "__fish_pvescale_using_subcommand status" -s q -l quiet -d 'Print nothing unless something changed or failed'
complete -c pvescale -n "__fish_pvescale_using_subcommand status" -s h -l help -d 'Print help'
complete -c pvescale -n "__fish_pvescale_using_subcommand check" -s c -l config -d 'Config file [default: $PVESCALE_CONFIG, else /etc/pvescale/pvescale.toml as root, else ~/.config/pvescale/pvescale.toml]' -r -F
complete -c pvescale -n "__fish_pvescale_using_subcommand check" -l notify-test -d 'Only send a test message on every notification channel ([notify]) and report each result; checks nothing else'
complete -c pvescale -n "__fish_pvescale_using_subcommand check" -s v -l verbose -d 'More detail on stderr (repeat for more)'
complete -c pvescale -n "__fish_pvescale_using_subcommand check" -s q -l quiet -d 'Print nothing unless something changed or failed'
complete -c pvescale -n "__fish_pvescale_using_subcommand check" -s h -l help -d 'Print help'
complete -c pvescale -n "__fish_pvescale_using_subcommand history" -l vm -d 'Only this VM' -r
complete -c pvescale -n "__fish_pvescale_using_subcommand history" -l cluster -d 'Only this cluster (its name in the config)' -r
complete -c pvescale -n "__fish_pvescale_using_subcommand history" -l since -d 'Only entries from this long ago until now, e.g. 30m, 24h, 7d' -r
complete -c pvescale -n "__fish_pvescale_using_subcommand history" -s o -l output -d 'Output format (svg: a chart of the sizes set for the VM given with --vm)' -r -f -a "table\t''
json\t''
svg\t'A chart (one self-contained SVG file)'"
complete -c pvescale -n "__fish_pvescale_using_subcommand history" -s c -l config -d 'Config file [default: $PVESCALE_CONFIG, else /etc/pvescale/pvescale.toml as root, else ~/.config/pvescale/pvescale.toml]' -r -F
complete -c pvescale -n "__fish_pvescale_using_subcommand history" -s v -l verbose -d 'More detail on stderr (repeat for more)'
complete -c pvescale -n "__fish_pvescale_using_subcommand history" -s q -l quiet -d 'Print nothing unless something changed or failed'
complete -c pvescale -n "__fish_pvescale_using_subcommand history" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pvescale -n "__fish_pvescale_using_subcommand recommend" -l since -d 'How much history to use, e.g. 36h, 7d (Proxmox keeps about a week)' -r
complete -c pvescale -n "__fish_pvescale_using_subcommand recommend" -l vm -d 'Only this VM (managed or not)' -r
complete -c pvescale -n "__fish_pvescale_using_subcommand recommend" -l cpu-margin -d 'CPU headroom on top of the 95th percentile of busy cores, in percent' -r
complete -c pvescale -n "__fish_pvescale_using_subcommand recommend" -s o -l output -d 'Output format' -r -f -a "table\t''
json\t''"
complete -c pvescale -n "__fish_pvescale_using_subcommand recommend" -s c -l config -d 'Config file [default: $PVESCALE_CONFIG, else /etc/pvescale/pvescale.toml as root, else ~/.config/pvescale/pvescale.toml]' -r -F
complete -c pvescale -n "__fish_pvescale_using_subcommand recommend" -s v -l verbose -d 'More detail on stderr (repeat for more)'
complete -c pvescale -n "__fish_pvescale_using_subcommand recommend" -s q -l quiet -d 'Print nothing unless something changed or failed'
complete -c pvescale -n "__fish_pvescale_using_subcommand recommend" -s h -l help -d 'Print help'
complete -c pvescale -n "__fish_pvescale_using_subcommand simulate" -l since -d 'How much history to replay, e.g. 36h, 7d (Proxmox keeps about a week)' -r
complete -c pvescale -n "__fish_pvescale_using_subcommand simulate" -l vm -d 'Only this VM (managed or not), with its minute-by-minute timeline' -r
complete -c pvescale -n "__fish_pvescale_using_subcommand simulate" -s o -l output -d 'Output format (csv, svg: the timeline of the VM given with --vm, as a table or a chart)' -r -f -a "table\t''
json\t''
csv\t''
svg\t'A chart (one self-contained SVG file)'"
complete -c pvescale -n "__fish_pvescale_using_subcommand simulate" -s c -l config -d 'Config file [default: $PVESCALE_CONFIG, else /etc/pvescale/pvescale.toml as root, else ~/.config/pvescale/pvescale.toml]' -r -F
complete -c pvescale -n "__fish_pvescale_using_subcommand simulate" -s v -l verbose -d 'More detail on stderr (repeat for more)'
complete -c pvescale -n "__fish_pvescale_using_subcommand simulate" -s q -l quiet -d 'Print nothing unless something changed or failed'
complete -c pvescale -n "__fish_pvescale_using_subcommand simulate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pvescale -n "__fish_pvescale_using_subcommand help; and not __fish_seen_subcommand_from run status check history recommend simulate help" -f -a "run" -d 'Evaluate and scale every managed VM once, then exit (run this from a timer)'
complete -c pvescale -n "__fish_pvescale_using_subcommand help; and not __fish_seen_subcommand_from run status check history recommend simulate help" -f -a "status" -d 'Show every managed VM: size, utilisation, readiness, and what the next run would do'
complete -c pvescale -n "__fish_pvescale_using_subcommand help; and not __fish_seen_subcommand_from run status check history recommend simulate help" -f -a "check" -d 'Check config, connection, credentials, privileges and each VM\'s readiness'
complete -c pvescale -n "__fish_pvescale_using_subcommand help; and not __fish_seen_subcommand_from run status check history recommend simulate help" -f -a "history" -d 'Show what runs did: every change, refusal and failure, oldest first'
complete -c pvescale -n "__fish_pvescale_using_subcommand help; and not __fish_seen_subcommand_from run status check history recommend simulate help" -f -a "recommend" -d 'Recommend vCPUs and memory per VM from the history Proxmox keeps (changes nothing)'
complete -c pvescale -n "__fish_pvescale_using_subcommand help; and not __fish_seen_subcommand_from run status check history recommend simulate help" -f -a "simulate" -d 'Replay the history through the scaling policy: what pvescale would have done'
complete -c pvescale -n "__fish_pvescale_using_subcommand help; and not __fish_seen_subcommand_from run status check history recommend simulate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
