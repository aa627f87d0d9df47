"""The command line: argument parsing and commands (_main), terminal output (_output)."""
