"""finq's command-line client (`finq`): see finq_cli.main."""
