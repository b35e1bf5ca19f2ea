//! Rebuilds the crate when a migration is added or changed, since the migrations are embedded
//! in it (`embed_migrations!` alone does not notice a new migration folder).

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
