pub mod align;
pub mod bench;
pub mod demo;
pub mod detect;
pub mod embed;
pub mod evaluate;
pub mod fetch;
pub mod import;
