package authority

import (
	"time"

	"golang.org/x/crypto/bcrypt"
)

// The package's tests hash passwords at bcrypt's lowest cost: at the
// production cost, with the race detector, each registration and login
// takes seconds.
func init() { passwordCost = bcrypt.MinCost }

// seenAssertion spends an assertion id (useAssertion): true when it was
// fresh. For the package's own tests, which ask only that.
func (a *Authority) seenAssertion(id string, exp time.Time) bool {
	return a.useAssertion(id, exp) == nil
}

// LoginFailed counts a failed login of user from addr in h's counters, as
// the login page does.
func (h *Handler) LoginFailed(user, addr string) error {
	return loginCounters{x: h.limits, store: h.A.Store}.fail(user, addr, time.Now())
}

// AccountLoginFailures is the stored count of user's per-account counter.
func (h *Handler) AccountLoginFailures(user string) (int, error) {
	var lc loginCounter
	err := h.A.Store.GetDoc(docLoginFailures, hashCode("account:"+user), &lc)
	return lc.Failures, err
}

// IssueInGrant issues device's paired token, for owner, in grant family
// (as a device-code poll or a refresh does), bound to the key thumbprint
// jkt.
func (a *Authority) IssueInGrant(device, owner, family, jkt string) (TokenResponse, error) {
	d, err := a.Store.Device(device)
	if err != nil {
		return TokenResponse{}, err
	}
	return a.issuePaired(d, owner, map[string]string{"jkt": jkt}, "", time.Time{}, family)
}
