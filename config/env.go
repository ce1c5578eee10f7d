package config

import (
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

var errEOF = io.EOF

// Duration is a time.Duration written as "5m" or "168h" in YAML and environment.
type Duration time.Duration

// D returns the duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(node *yaml.Node) error {
	v, err := time.ParseDuration(node.Value)
	if err != nil {
		// A *yaml.TypeError lets the decoder go on and report every bad field.
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %q is not a duration like 30s, 5m or 168h", node.Line, node.Value)}}
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// EnvNames lists every environment variable the configuration understands,
// with the yaml key path it overrides.
func EnvNames() map[string]string {
	out := map[string]string{}
	walkFields(reflect.ValueOf(&Config{}).Elem(), "", func(path string, _ reflect.Value) {
		out[envName(path)] = path
	})
	return out
}

func envName(path string) string {
	return "CHAPPE_" + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
}

// walkFields calls fn for every leaf field of v with its dotted yaml path.
func walkFields(v reflect.Value, prefix string, fn func(path string, field reflect.Value)) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if key == "" || key == "-" {
			continue
		}
		path := key
		if prefix != "" {
			path = prefix + "." + key
		}
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct && fv.Type() != reflect.TypeOf(Duration(0)) {
			walkFields(fv, path, fn)
			continue
		}
		fn(path, fv)
	}
}

// applyEnv sets every field whose CHAPPE_* variable is present in environ.
func applyEnv(cfg *Config, environ []string) []error {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "CHAPPE_") {
			env[k] = v
		}
	}
	var errs []error
	walkFields(reflect.ValueOf(cfg).Elem(), "", func(path string, fv reflect.Value) {
		name := envName(path)
		raw, ok := env[name]
		if !ok {
			return
		}
		if err := setFromString(fv, raw); err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", name, path, err))
		}
	})
	return errs
}

func setFromString(fv reflect.Value, raw string) error {
	if fv.Type() == reflect.TypeOf(Duration(0)) {
		d, err := time.ParseDuration(raw)
		if err != nil {
			return fmt.Errorf("%q is not a duration like 30s, 5m or 168h", raw)
		}
		fv.SetInt(int64(d))
		return nil
	}
	switch fv.Kind() {
	case reflect.String:
		fv.SetString(raw)
	case reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return fmt.Errorf("%q is not true or false", raw)
		}
		fv.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not an integer", raw)
		}
		fv.SetInt(n)
	case reflect.Slice:
		if fv.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("cannot be set from the environment (type %s)", fv.Type())
		}
		var items []string
		for _, item := range strings.Split(raw, ",") {
			if item = strings.TrimSpace(item); item != "" {
				items = append(items, item)
			}
		}
		fv.Set(reflect.ValueOf(items))
	case reflect.Float64:
		f, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", raw)
		}
		fv.SetFloat(f)
	default:
		return fmt.Errorf("cannot be set from the environment (type %s)", fv.Type())
	}
	return nil
}
