//! Rebuilds the crate when a migration is added or changed, since the migrations are embedded
//! in it (`embed_migrations!` alone does not notice a new migration folder), and records a
//! fingerprint of exactly the migrations it embeds (`db::MIGRATIONS_FINGERPRINT`), so a test
//! binary names its template database after the migrations it will apply, not after whatever
//! is on disk when it runs.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
    let root = Path::new("../../migrations");
    let mut files = Vec::new();
    collect(root, &mut files);
    files.sort();
    // FNV-1a, 64 bits: stable across builds and compilers, which std's hasher does not promise.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for file in files {
        let relative = file.strip_prefix(root).unwrap_or(&file);
        feed(relative.to_string_lossy().as_bytes());
        feed(&[0]);
        feed(&std::fs::read(&file).unwrap_or_default());
        feed(&[0]);
    }
    println!("cargo:rustc-env=HOPSBRIDGE_MIGRATIONS_FINGERPRINT={:012x}", hash & 0xffff_ffff_ffff);
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                collect(&path, out);
            } else {
                out.push(path);
            }
        }
    }
}
