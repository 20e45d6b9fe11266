//! The `coffee` binary, built as part of this test crate so the tests can start real nodes with it
//! (`CARGO_BIN_EXE_coffee-node`).
fn main() {
    coffee::cli::main();
}
