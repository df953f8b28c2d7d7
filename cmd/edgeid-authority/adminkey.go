package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/edgeid/edgeid/cloudsync/authority"
)

// adminKeyCmd manages named admin API keys through the admin API of a
// running authority (the store is the authority's own: Badger lets one
// process open it), authenticated like `gateway` with an admin key or the
// admin token (--admin-token-file, EDGEID_AUTHORITY_ADMIN_TOKEN).
//
//	edgeid-authority admin-key add NAME      prints the new key, once
//	edgeid-authority admin-key list          names, created, by whom, last used
//	edgeid-authority admin-key revoke NAME
func adminKeyCmd(ctx context.Context, args []string, out io.Writer) error {
	c := newAdminClient(ctx, "admin-key")
	if err := c.fs.Parse(args); err != nil {
		return err
	}
	fs := c.fs
	switch {
	case fs.NArg() == 2 && fs.Arg(0) == "add":
		data, err := c.call(http.MethodPost, "/admin/v1/admin-keys", map[string]string{"name": fs.Arg(1)})
		if err != nil {
			return err
		}
		var r struct {
			Name string `json:"name"`
			Key  string `json:"key"`
		}
		if err := json.Unmarshal(data, &r); err != nil || r.Key == "" {
			return fmt.Errorf("unexpected answer from the authority: %v", err)
		}
		_, err = fmt.Fprintf(out, "admin key %s (shown this once; the authority keeps only its hash):\n  %s\nuse it from a file only you can read: --admin-token-file FILE (or EDGEID_AUTHORITY_ADMIN_TOKEN)\nrevoke it with: edgeid-authority admin-key revoke %s\n", r.Name, r.Key, r.Name)
		return err
	case fs.NArg() == 1 && fs.Arg(0) == "list":
		data, err := c.call(http.MethodGet, "/admin/v1/admin-keys", nil)
		if err != nil {
			return err
		}
		var ks []authority.AdminKeyInfo
		if err := json.Unmarshal(data, &ks); err != nil {
			return fmt.Errorf("unexpected answer from the authority: %v", err)
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tCREATED\tCREATED BY\tLAST USED")
		when := func(t time.Time, none string) string {
			if t.IsZero() {
				return none
			}
			return t.UTC().Format("2006-01-02 15:04:05Z")
		}
		for _, k := range ks {
			created, by := when(k.Created, "-"), k.CreatedBy
			if k.Configured {
				created, by = "(configuration)", "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.Name, created, by, when(k.LastUsed, "never"))
		}
		return tw.Flush()
	case fs.NArg() == 2 && fs.Arg(0) == "revoke":
		if _, err := c.call(http.MethodDelete, "/admin/v1/admin-keys/"+url.PathEscape(fs.Arg(1)), nil); err != nil {
			return err
		}
		_, err := fmt.Fprintf(out, "admin key %s revoked\n", fs.Arg(1))
		return err
	}
	return errors.New("usage: edgeid-authority admin-key add NAME | list | revoke NAME [--url URL] [--fingerprint SHA256] [--admin-token-file FILE]")
}
