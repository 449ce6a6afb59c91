pub mod todo {}
