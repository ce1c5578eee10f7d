package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"chappe/app"
	"chappe/config"
)

// loadConfig parses --config (or CHAPPE_CONFIG) and the environment.
func loadConfig(fs *flag.FlagSet, args []string) (config.Config, error) {
	path := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return config.Config{}, err
	}
	return readConfig(*path)
}

// configFlag adds --config to fs (default: CHAPPE_CONFIG).
func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", os.Getenv("CHAPPE_CONFIG"), "YAML configuration file")
}

// readConfig loads the configuration file at path (none: "") and the
// environment's overrides.
func readConfig(path string) (config.Config, error) {
	cfg, err := config.Load(path, os.Environ())
	if err != nil {
		return cfg, fmt.Errorf("configuration:\n%w", err)
	}
	return cfg, nil
}

// cmdServe runs the server until SIGINT or SIGTERM.
func cmdServe(args []string) error {
	cfg, err := loadConfig(flag.NewFlagSet("serve", flag.ExitOnError), args)
	if err != nil {
		return err
	}
	log := app.NewLogger(cfg.Log, os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log.Info().Str("version", version).Msg("starting chappe")
	// Start-up is not cut short by a signal: a half-started embedded cluster
	// would be left running with nobody to stop it. A signal that arrives
	// meanwhile makes Serve return at once, and Close stops everything.
	srv, err := app.Open(context.Background(), cfg, log)
	if err != nil {
		return err
	}
	serveErr := srv.Serve(ctx)
	closeErr := srv.Close()
	if serveErr != nil {
		return serveErr
	}
	if closeErr != nil {
		return fmt.Errorf("stopping the embedded database: %w", closeErr)
	}
	log.Info().Msg("stopped")
	return nil
}
