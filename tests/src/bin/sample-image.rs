//! `sample-image OUT SIZE_MIB SEED RELEASE`: writes a deterministic sample image (for the demo).

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: sample-image OUT SIZE_MIB SEED RELEASE");
        std::process::exit(2);
    }
    let parse = |s: &str| {
        s.parse::<u64>()
            .unwrap_or_else(|_| panic!("{s} is not a number"))
    };
    let size = parse(&args[2]) * 1024 * 1024;
    if let Err(e) = diffota_tests::sample::write_image(
        std::path::Path::new(&args[1]),
        size,
        parse(&args[3]),
        parse(&args[4]),
    ) {
        eprintln!("sample-image: {}: {e}", args[1]);
        std::process::exit(1);
    }
}
