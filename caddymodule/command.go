package caddymodule

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/caddyserver/certmagic"
	"github.com/spf13/cobra"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "wappchat-keys",
		Usage: "create|list|revoke|import [--config <path> [--adapter <name>]]",
		Short: "Creates, lists, revokes and imports WApp Chat integration keys",
		Long: `
Manages the integration keys the wappchat_auth handler accepts. When a server
answers on the admin address (--address, else the one --config names, else
localhost:2019), the command goes through its admin API, so the server's cache
learns of the change at once. Otherwise it opens the store directly: with
--config, exactly the storage that config gives the server; without it, Caddy's
default storage. It says on stderr which one it used. Raw keys and secrets are
printed once, at creation, and never stored: the store keeps only the SHA-256
of each key.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.PersistentFlags().StringP("config", "c", "", "Configuration file whose storage holds the keys")
			cmd.PersistentFlags().StringP("adapter", "a", "", "Name of the adapter for the config file")
			cmd.PersistentFlags().String("address", "", "Admin API address of the running server (default: from --config, else localhost:2019)")

			create := &cobra.Command{
				Use:   "create --tenant <id> [--name <text>] [--signing] [--expires <duration>] [--json]",
				Short: "Creates a key and prints it (and its signing secret) once",
				Args:  cobra.NoArgs,
				RunE:  caddycmd.WrapCommandFuncForCobra(cmdCreate),
			}
			create.Flags().String("tenant", "", "Tenant the key authenticates as (required)")
			create.Flags().String("name", "", "Label for operators")
			create.Flags().Bool("signing", false, "Also issue an integration secret; every request must then be signed")
			create.Flags().String("expires", "", "Lifetime such as 720h or 30d; default never")
			create.Flags().Bool("json", false, "Print one JSON object")

			list := &cobra.Command{
				Use:   "list [--tenant <id>] [--all] [--json]",
				Short: "Lists keys (never their raw values or secrets)",
				Args:  cobra.NoArgs,
				RunE:  caddycmd.WrapCommandFuncForCobra(cmdList),
			}
			list.Flags().String("tenant", "", "Only this tenant's keys")
			list.Flags().Bool("all", false, "Include revoked keys")
			list.Flags().Bool("json", false, "Print a JSON array")

			revoke := &cobra.Command{
				Use:   "revoke <key-id>",
				Short: "Revokes a key for good; its record stays for audit",
				Args:  cobra.ExactArgs(1),
				RunE:  caddycmd.WrapCommandFuncForCobra(cmdRevoke),
			}

			imp := &cobra.Command{
				Use:   "import --tenant <id> --sha256 <hex> [--name <text>] [--secret <text>|-] [--json]",
				Short: "Adopts a key issued elsewhere, from the SHA-256 of its raw value",
				Args:  cobra.NoArgs,
				RunE:  caddycmd.WrapCommandFuncForCobra(cmdImport),
			}
			imp.Flags().String("tenant", "", "Tenant the key authenticates as (required)")
			imp.Flags().String("sha256", "", "Hex SHA-256 of the raw key (required)")
			imp.Flags().String("name", "", "Label for operators")
			imp.Flags().String("secret", "", "Existing integration secret; - reads it from stdin")
			imp.Flags().Bool("json", false, "Print one JSON object")

			rotate := &cobra.Command{
				Use:   "rotate-secret <key-id> [--grace 24h] [--json]",
				Short: "Issues a new secret, printed once; the old one verifies until the grace ends",
				Args:  cobra.ExactArgs(1),
				RunE:  caddycmd.WrapCommandFuncForCobra(cmdRotateSecret),
			}
			rotate.Flags().String("grace", "24h", "How long the old secret keeps verifying; 0 retires it at once")
			rotate.Flags().Bool("json", false, "Print one JSON object")

			enable := &cobra.Command{
				Use:   "enable-signing <key-id> [--json]",
				Short: "Gives a key without a secret its first secret, printed once",
				Args:  cobra.ExactArgs(1),
				RunE:  caddycmd.WrapCommandFuncForCobra(cmdEnableSigning),
			}
			enable.Flags().Bool("json", false, "Print one JSON object")

			reencrypt := &cobra.Command{
				Use:   "reencrypt [--old-key <base64>|{env.VAR}]...",
				Short: "Seals every stored secret under the configured secrets_key (works on the store directly)",
				Long: `
Rewrites every record so its secrets are sealed under the secrets_key of the
config (or stored as they are, when it has none). Records sealed under an
earlier key need that key: pass it with --old-key, preferably as a placeholder
such as {env.OLD_WAPPCHAT_SECRETS_KEY}. Safe to interrupt and run again.
`,
				Args: cobra.NoArgs,
				RunE: caddycmd.WrapCommandFuncForCobra(cmdReencrypt),
			}
			reencrypt.Flags().StringArray("old-key", nil, "An earlier secrets_key that records may still be sealed under")

			migrate := &cobra.Command{
				Use:   "migrate --to redis|storage",
				Short: "Copies every record between Caddy's storage and the config's shared store",
				Args:  cobra.NoArgs,
				RunE:  caddycmd.WrapCommandFuncForCobra(cmdMigrate),
			}
			migrate.Flags().String("to", "", "redis: from Caddy's storage to the configured store; storage: back")

			cmd.AddCommand(create, list, revoke, imp, rotate, enable, reencrypt, migrate)
		},
	})
}

func cmdCreate(fl caddycmd.Flags) (int, error) {
	return createKey(fl, CreateRequest{
		Tenant:    fl.String("tenant"),
		Name:      fl.String("name"),
		Signing:   fl.Bool("signing"),
		ExpiresIn: fl.String("expires"),
	})
}

func cmdImport(fl caddycmd.Flags) (int, error) {
	if fl.String("sha256") == "" {
		return caddy.ExitCodeFailedStartup, errors.New("--sha256 is required")
	}
	secret := fl.String("secret")
	if secret == "-" {
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return caddy.ExitCodeFailedStartup, fmt.Errorf("reading secret from stdin: %v", err)
		}
		if secret = strings.TrimRight(line, "\r\n"); secret == "" {
			return caddy.ExitCodeFailedStartup, errors.New("no secret on stdin")
		}
	}
	return createKey(fl, CreateRequest{
		Tenant: fl.String("tenant"),
		Name:   fl.String("name"),
		SHA256: fl.String("sha256"),
		Secret: secret,
	})
}

// createKey validates the request before touching the store or the server, so
// bad arguments write nothing.
func createKey(fl caddycmd.Flags, req CreateRequest) (int, error) {
	spec, err := req.Spec()
	if err == nil {
		err = validateSpec(spec)
	}
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	keys, done, err := openKeys(fl)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	defer done()
	issued, err := keys.Create(req)
	if err != nil {
		return caddy.ExitCodeFailedQuit, fmt.Errorf("storing key: %w", err)
	}
	if fl.Bool("json") {
		return printJSON(issued)
	}
	fmt.Printf("Key %s for tenant %s stored.\n", issued.ID, issued.Tenant)
	if issued.Key != "" {
		fmt.Printf("Key (shown only now):    %s\n", issued.Key)
	}
	if issued.Secret != "" {
		fmt.Printf("Secret (shown only now): %s\n", issued.Secret)
	}
	return 0, nil
}

func cmdList(fl caddycmd.Flags) (int, error) {
	keys, done, err := openKeys(fl)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	defer done()
	summaries, err := keys.List(fl.String("tenant"), fl.Bool("all"))
	if err != nil {
		return caddy.ExitCodeFailedQuit, err
	}
	if fl.Bool("json") {
		return printJSON(summaries)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTENANT\tNAME\tCREATED\tSTATUS\tSIGNING")
	for _, s := range summaries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%t\n", s.ID, s.Tenant, s.Name, s.CreatedAt.Format(time.RFC3339), s.Status(time.Now()), s.Signing)
	}
	return 0, tw.Flush()
}

func cmdRevoke(fl caddycmd.Flags) (int, error) {
	keys, done, err := openKeys(fl)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	defer done()
	summary, err := keys.Revoke(fl.Arg(0))
	if errors.Is(err, ErrNotFound) {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("no key with id %q", fl.Arg(0))
	}
	if err != nil {
		return caddy.ExitCodeFailedQuit, err
	}
	fmt.Printf("Key %s (tenant %s) revoked at %s.\n", summary.ID, summary.Tenant, summary.RevokedAt.Format(time.RFC3339))
	return 0, nil
}

func cmdRotateSecret(fl caddycmd.Flags) (int, error) {
	if _, err := ParseGrace(fl.String("grace")); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	return issueSecret(fl, func(keys keyService) (IssuedView, error) { return keys.RotateSecret(fl.Arg(0), fl.String("grace")) })
}

func cmdEnableSigning(fl caddycmd.Flags) (int, error) {
	return issueSecret(fl, func(keys keyService) (IssuedView, error) { return keys.EnableSigning(fl.Arg(0)) })
}

func issueSecret(fl caddycmd.Flags, issue func(keyService) (IssuedView, error)) (int, error) {
	keys, done, err := openKeys(fl)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	defer done()
	issued, err := issue(keys)
	if errors.Is(err, ErrNotFound) {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("no key with id %q", fl.Arg(0))
	}
	if err != nil {
		return caddy.ExitCodeFailedQuit, err
	}
	if fl.Bool("json") {
		return printJSON(issued)
	}
	fmt.Printf("Key %s (tenant %s) has a new secret.\n", issued.ID, issued.Tenant)
	fmt.Printf("Secret (shown only now): %s\n", issued.Secret)
	for _, s := range issued.Secrets {
		if s.ExpiresAt != nil {
			fmt.Printf("An earlier secret keeps verifying until %s.\n", s.ExpiresAt.Format(time.RFC3339))
		}
	}
	return 0, nil
}

func cmdReencrypt(fl caddycmd.Flags) (int, error) {
	var old []*SecretsKey
	repl := caddy.NewReplacer()
	values, err := fl.GetStringArray("old-key")
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	for _, v := range values {
		key, err := ParseSecretsKey(repl.ReplaceKnown(v, ""))
		if err != nil {
			return caddy.ExitCodeFailedStartup, fmt.Errorf("--old-key: %v", err)
		}
		old = append(old, key)
	}
	app, done, err := openAppWith(fl, old)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	defer done()
	n, err := app.Reencrypt(context.Background())
	if err != nil {
		return caddy.ExitCodeFailedQuit, err
	}
	state := "stored unencrypted (no secrets_key is configured)"
	if app.sealer.Current != nil {
		state = "sealed under secrets key " + app.sealer.Current.Fingerprint
	}
	fmt.Printf("%d records rewritten; every secret is now %s.\n", n, state)
	return 0, nil
}

func cmdMigrate(fl caddycmd.Flags) (int, error) {
	to := fl.String("to")
	if to != "redis" && to != "storage" {
		return caddy.ExitCodeFailedStartup, errors.New("--to must be redis or storage")
	}
	app, done, err := openApp(fl)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	defer done()
	n, err := app.Migrate(context.Background(), to == "redis")
	if err != nil {
		return caddy.ExitCodeFailedQuit, err
	}
	fmt.Printf("%d records copied to %s.\n", n, to)
	return 0, nil
}

// openApp builds the wappchat app over the storage the given config uses,
// as `caddy storage export` does, without starting anything.
func openApp(fl caddycmd.Flags) (*App, func(), error) {
	return openAppWith(fl, nil)
}

// openAppWith is openApp that can also open records sealed under old keys.
func openAppWith(fl caddycmd.Flags, oldSecretsKeys []*SecretsKey) (*App, func(), error) {
	var cfg struct {
		StorageRaw json.RawMessage `json:"storage,omitempty" caddy:"namespace=caddy.storage inline_key=module"`
		Apps       struct {
			Wappchat json.RawMessage `json:"wappchat,omitempty"`
		} `json:"apps"`
	}
	configFile, adapter := fl.String("config"), fl.String("adapter")
	if configFile == "" && adapter != "" {
		return nil, nil, errors.New("--adapter needs --config")
	}
	if configFile != "" {
		raw, _, _, err := caddycmd.LoadConfig(configFile, adapter)
		if err != nil {
			return nil, nil, err
		}
		if err := json.Unmarshal(raw, &cfg); err != nil {
			return nil, nil, fmt.Errorf("reading config: %v", err)
		}
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	var storage certmagic.Storage = caddy.DefaultStorage
	if cfg.StorageRaw != nil {
		mod, err := ctx.LoadModule(&cfg, "StorageRaw")
		if err != nil {
			cancel()
			return nil, nil, fmt.Errorf("loading storage: %v", err)
		}
		if storage, err = mod.(caddy.StorageConverter).CertMagicStorage(); err != nil {
			cancel()
			return nil, nil, fmt.Errorf("opening storage: %v", err)
		}
	}
	app := &App{oldSecretsKeys: oldSecretsKeys}
	if cfg.Apps.Wappchat != nil {
		if err := caddy.StrictUnmarshalJSON(cfg.Apps.Wappchat, app); err != nil {
			cancel()
			return nil, nil, fmt.Errorf("reading wappchat app config: %v", err)
		}
	}
	if err := app.provision(ctx, storage); err != nil {
		cancel()
		return nil, nil, err
	}
	return app, cancel, nil
}

// parseLifetime accepts Go durations and Caddy's day suffix (30d); "" is forever.
func parseLifetime(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := caddy.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("--expires: %q is not a positive duration such as 720h or 30d", v)
	}
	return d, nil
}

func printJSON(v any) (int, error) {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return caddy.ExitCodeFailedQuit, err
	}
	return 0, nil
}
