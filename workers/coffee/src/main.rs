fn main() {
    coffee::cli::main();
}
