package authority

import (
	"errors"
	"fmt"
	"net/mail"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/edgeid/edgeid/store"
)

// ErrOwnerTaken is RegisterOwner's answer for a username already in use.
var ErrOwnerTaken = errors.New("username: that name is taken")

// RegisterOwner creates an owner account as the register page does, for
// callers that are not a browser (the embedded demo, an operator's script):
// the username (trimmed, lowercased), email and password are checked by the
// page's rules, the password is kept only as a bcrypt hash (passwordCost),
// and the user record is written through the feed, so gateways learn of the
// owner. It refuses a username in use with ErrOwnerTaken; an error names the
// field it is about and never contains the password.
func (a *Authority) RegisterOwner(username, email, password string) error {
	user := strings.ToLower(strings.TrimSpace(username))
	email = strings.TrimSpace(email)
	var errs []error
	if !usernameRE.MatchString(user) {
		errs = append(errs, errors.New("username: use 3 to 32 lowercase letters, digits, dots, dashes or underscores, starting with a letter or digit"))
	}
	if addr, err := mail.ParseAddress(email); err != nil || addr.Address != email {
		errs = append(errs, errors.New("email: that does not look like an email address (name@example.com)"))
	}
	if len(password) < 10 || len(password) > 128 {
		errs = append(errs, errors.New("password: use 10 to 128 characters"))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if _, err := a.Store.User(user); err == nil {
		return ErrOwnerTaken
	} else if !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("register %s: %w", user, err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), passwordCost)
	if err != nil {
		return fmt.Errorf("register %s: %w", user, err)
	}
	// The user and its credential in one commit, on condition that the
	// name is still free: of registrations of one name at once, one wins.
	if err := a.createAccount(store.User{ID: user, Status: store.UserActive}, credential{Email: email, Hash: hash}, "registration"); errors.Is(err, ErrOwnerTaken) {
		return err
	} else if err != nil {
		return fmt.Errorf("register %s: %w", user, err)
	}
	a.log.Info("owner registered", "user", user)
	return nil
}
