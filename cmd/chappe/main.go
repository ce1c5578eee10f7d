// Command chappe is the Chappe homeserver: `chappe serve` runs it; the other
// subcommands are for its operators.
package main

import (
	"errors"
	"fmt"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `chappe — a Matrix homeserver for the French state's federation

Usage:
  chappe serve [--config FILE]                 run the server
  chappe register-user [--config FILE] --user NAME [--admin] [--password PASS]
                                               create an account (password read from stdin if not given)
  chappe registration-token create [--config FILE] [--token T] [--uses N] [--expires DURATION]
  chappe registration-token list [--config FILE]
  chappe registration-token delete [--config FILE] TOKEN
  chappe allowlist keygen|new|add|remove|bump|sign|verify|show|diff|status …
                                               the security officers' tool for the
                                               signed allowlist (chappe allowlist help)
  chappe federation check SERVER [--config FILE] [--json] [--probe-unlisted]
                                               check, step by step, that federation
                                               with SERVER works (for IT departments)
  chappe version                               print the version

The configuration is one YAML file (see chappe.example.yaml); every key can be
overridden by an environment variable CHAPPE_<KEY_PATH>, e.g. CHAPPE_SERVER_NAME.
The config file may also be given as CHAPPE_CONFIG.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = cmdServe(os.Args[2:])
	case "register-user":
		err = cmdRegisterUser(os.Args[2:], os.Stdin, os.Stdout)
	case "registration-token":
		err = cmdRegistrationToken(os.Args[2:], os.Stdout)
	case "allowlist":
		err = cmdAllowlist(os.Args[2:], os.Stdout, os.Stderr)
	case "federation":
		err = cmdFederation(os.Args[2:], os.Stdout, os.Stderr)
	case "version", "--version", "-v":
		fmt.Printf("chappe %s\n", version)
	case "help", "--help", "-h":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "chappe: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	var exit *exitError
	if errors.As(err, &exit) {
		os.Exit(exit.code) // the command has said why
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "chappe: %v\n", err)
		os.Exit(1)
	}
}
