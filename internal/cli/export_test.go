package cli

// AllCommands is commands, for the tests of package cli_test.
func AllCommands(extra []Command) []Command { return commands(extra) }
