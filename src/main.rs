fn main() {
    // A failpoint rule that does not parse (tests only) stops bkfs before it does anything.
    if let Err(e) = bkfs::os::fail::arm_from_env() {
        eprintln!("bkfs: {e}");
        std::process::exit(2);
    }
    std::process::exit(bkfs::cli::main());
}
