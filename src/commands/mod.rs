//! One module per subcommand, each thin: it turns its arguments into calls on the library.

pub mod sandbox;
