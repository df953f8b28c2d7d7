package authority

import "golang.org/x/crypto/bcrypt"

// The package's tests hash passwords at bcrypt's lowest cost: at the
// production cost, with the race detector, each registration and login
// takes seconds.
func init() { passwordCost = bcrypt.MinCost }
