// `sqlx::migrate!` embeds the migrations at compile time; without this a new migration file
// would not be picked up until something else in the crate changed.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
