"""The command line: click commands that parse options, build a config, call one library function, print."""
