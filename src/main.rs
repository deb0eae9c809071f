use clap::{Parser, Subcommand};

/// bkfs: point-in-time snapshots of any directory.
#[derive(Parser)]
#[command(name = "bkfs", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mount SOURCE on MOUNTPOINT with its live tree (see docs/MOUNT.md).
    Mount(bkfs::mount_cmd::MountArgs),
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Mount(args) => {
            if let Err(e) = bkfs::mount_cmd::run(&args) {
                eprintln!("bkfs mount: {e}");
                std::process::exit(e.exit_code());
            }
        }
    }
}
