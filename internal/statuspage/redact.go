package statuspage

import (
	"reflect"
	"slices"
	"strings"
)

// Redacted stands in for a secret in a page.
const Redacted = "[redacted]"

// Redact replaces every occurrence of the secrets in the strings of v (a
// *Page or a *Detail): the data holds no credentials, but an error
// message might quote one. Longer secrets are replaced first, so that
// one containing another goes whole.
func Redact(v any, secrets []string) {
	secrets = slices.DeleteFunc(slices.Clone(secrets), func(s string) bool { return s == "" })
	if len(secrets) == 0 {
		return
	}
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	pairs := make([]string, 0, 2*len(secrets))
	for _, s := range secrets {
		pairs = append(pairs, s, Redacted)
	}
	redact(reflect.ValueOf(v), strings.NewReplacer(pairs...))
}

func redact(v reflect.Value, r *strings.Replacer) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			redact(v.Elem(), r)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				redact(v.Field(i), r)
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			redact(v.Index(i), r)
		}
	case reflect.String:
		if v.CanSet() {
			v.SetString(r.Replace(v.String()))
		}
	}
}
