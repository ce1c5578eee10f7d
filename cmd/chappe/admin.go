package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"chappe/accounts"
	"chappe/app"
	"chappe/config"
)

// withAccounts opens the configured database (starting the embedded cluster
// if needed, or using the running server's) and runs fn.
func withAccounts(cfg config.Config, fn func(ctx context.Context, acc *accounts.Service) error) error {
	ctx := context.Background()
	log := app.NewLogger(config.Log{Level: "warn", Format: "console"}, os.Stderr)
	db, err := app.OpenDatabase(ctx, cfg, log)
	if err != nil {
		return err
	}
	err = fn(ctx, app.NewAccounts(cfg, db.Store))
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return err
}

// cmdRegisterUser creates an account directly in the database.
func cmdRegisterUser(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("register-user", flag.ExitOnError)
	user := fs.String("user", "", "localpart of the new user (e.g. alice)")
	password := fs.String("password", "", "password (read from standard input if empty)")
	admin := fs.Bool("admin", false, "make the user a server administrator")
	cfg, err := loadConfig(fs, args)
	if err != nil {
		return err
	}
	if *user == "" {
		return errors.New("register-user: --user is required")
	}
	if *password == "" {
		pw, err := readPassword(stdin)
		if err != nil {
			return err
		}
		*password = pw
	}
	localpart := strings.TrimPrefix(strings.SplitN(*user, ":", 2)[0], "@")
	return withAccounts(cfg, func(ctx context.Context, acc *accounts.Service) error {
		t, err := acc.Register(ctx, accounts.RegisterRequest{Localpart: localpart, Password: *password, IsAdmin: *admin, InhibitLogin: true})
		if err != nil {
			return err
		}
		kind := "user"
		if *admin {
			kind = "administrator"
		}
		fmt.Fprintf(stdout, "created %s %s\n", kind, t.UserID)
		return nil
	})
}

// cmdRegistrationToken manages the tokens used when registration.mode is token.
func cmdRegistrationToken(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("registration-token: say create, list or delete")
	}
	switch args[0] {
	case "create":
		fs := flag.NewFlagSet("registration-token create", flag.ExitOnError)
		token := fs.String("token", "", "the token (random if empty)")
		uses := fs.Int("uses", 0, "how many registrations it allows (0 = unlimited)")
		expires := fs.Duration("expires", 0, "validity from now, e.g. 72h (0 = never expires)")
		cfg, err := loadConfig(fs, args[1:])
		if err != nil {
			return err
		}
		if *token == "" {
			b := make([]byte, 12)
			_, _ = rand.Read(b)
			*token = base64.RawURLEncoding.EncodeToString(b)
		}
		var usesAllowed *int
		if *uses > 0 {
			usesAllowed = uses
		}
		var expiry *time.Time
		if *expires > 0 {
			t := time.Now().Add(*expires)
			expiry = &t
		}
		return withAccounts(cfg, func(ctx context.Context, acc *accounts.Service) error {
			if err := acc.CreateRegistrationToken(ctx, *token, usesAllowed, expiry); err != nil {
				return err
			}
			fmt.Fprintln(stdout, *token)
			return nil
		})
	case "list":
		cfg, err := loadConfig(flag.NewFlagSet("registration-token list", flag.ExitOnError), args[1:])
		if err != nil {
			return err
		}
		return withAccounts(cfg, func(ctx context.Context, acc *accounts.Service) error {
			tokens, err := acc.ListRegistrationTokens(ctx)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TOKEN\tUSED\tALLOWED\tEXPIRES")
			for _, t := range tokens {
				allowed, exp := "unlimited", "never"
				if t.UsesAllowed != nil {
					allowed = fmt.Sprint(*t.UsesAllowed)
				}
				if t.ExpiryTS != nil {
					exp = time.UnixMilli(*t.ExpiryTS).UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", t.Token, t.Completed, allowed, exp)
			}
			return tw.Flush()
		})
	case "delete":
		fs := flag.NewFlagSet("registration-token delete", flag.ExitOnError)
		cfg, err := loadConfig(fs, args[1:])
		if err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return errors.New("registration-token delete: give exactly one token")
		}
		return withAccounts(cfg, func(ctx context.Context, acc *accounts.Service) error {
			if err := acc.DeleteRegistrationToken(ctx, fs.Arg(0)); err != nil {
				return err
			}
			fmt.Fprintln(stdout, "deleted")
			return nil
		})
	}
	return fmt.Errorf("registration-token: unknown action %q (create, list, delete)", args[0])
}

// readPassword reads the new user's password: without echo, after a prompt,
// from a terminal; as the first line of the input otherwise (for scripts:
// `echo "$PW" | chappe register-user --user alice`), which keeps it out of ps.
func readPassword(stdin io.Reader) (string, error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(os.Stderr, "Password: ")
		pw, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(os.Stderr)
		if err != nil {
			return "", fmt.Errorf("register-user: reading the password: %w", err)
		}
		return string(pw), nil
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && line == "" {
		return "", errors.New("register-user: no password given (use --password or pipe it on standard input)")
	}
	return strings.TrimRight(line, "\r\n"), nil
}
