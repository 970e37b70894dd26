pub mod bench;
pub mod demo;
pub mod embed;
pub mod fetch;
pub mod import;
