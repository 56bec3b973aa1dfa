"""One module per `pga` subcommand, each with define_flags() and main(argv)."""
