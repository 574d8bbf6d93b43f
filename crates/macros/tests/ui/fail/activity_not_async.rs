use perdure_core::activity;

#[activity]
fn say_hello(city: String) -> Result<String, String> {
    Ok(city)
}

fn main() {}
