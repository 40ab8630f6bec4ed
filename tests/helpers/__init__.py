"""What several test modules build the same way: composed configs, data files in the official
formats, command-line runs, scripts as modules. Test modules import these from here, never from
one another."""
