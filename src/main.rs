fn main() {
    println!("pvescale: not wired yet");
}
