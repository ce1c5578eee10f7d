package clientapi

import (
	"net/http"
	"sort"
	"strings"

	"chappe/accounts"
	"chappe/mxerr"
	"chappe/mxhttp"
)

// passwordFlows is the UIA of operations a logged-in user confirms with a password.
var passwordFlows = []accounts.Flow{{Stages: []string{accounts.StagePassword}}}

type changePasswordBody struct {
	Auth          *accounts.AuthDict `json:"auth"`
	NewPassword   *string            `json:"new_password"`
	LogoutDevices *bool              `json:"logout_devices"`
}

// changePassword sets a new password after UIA.
// Spec: POST /_matrix/client/v3/account/password.
func (a *API) changePassword(w http.ResponseWriter, r *http.Request) {
	var body changePasswordBody
	if err := a.decode(r, false, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if body.NewPassword == nil {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.BadJSON, "new_password is required"))
		return
	}
	if err := a.accounts.CheckPasswordStrength(*body.NewPassword); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	sess := session(r)
	ctx := r.Context()
	done, err := a.accounts.Authorize(ctx, accounts.Operation{Name: "POST /account/password", UserID: sess.UserID, Flows: passwordFlows}, body.Auth)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	logout := body.LogoutDevices == nil || *body.LogoutDevices
	if err := a.accounts.ChangePassword(ctx, sess, *body.NewPassword, logout); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if logout {
		a.devicesDeleted(r, sess.UserID)
	}
	_ = a.accounts.FinishUIA(ctx, done.SessionID)
	mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
}

type deactivateBody struct {
	Auth  *accounts.AuthDict `json:"auth"`
	Erase bool               `json:"erase"`
}

// deactivate closes the account after UIA.
// Spec: POST /_matrix/client/v3/account/deactivate.
func (a *API) deactivate(w http.ResponseWriter, r *http.Request) {
	var body deactivateBody
	if err := a.decode(r, true, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	sess := session(r)
	ctx := r.Context()
	done, err := a.accounts.Authorize(ctx, accounts.Operation{Name: "POST /account/deactivate", UserID: sess.UserID, Flows: passwordFlows}, body.Auth)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if err := a.accounts.Deactivate(ctx, sess.UserID, body.Erase); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	a.devicesDeleted(r, sess.UserID)
	_ = a.accounts.FinishUIA(ctx, done.SessionID)
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": "no-support"})
}

// listDevices lists the user's devices. Spec: GET /_matrix/client/v3/devices.
func (a *API) listDevices(w http.ResponseWriter, r *http.Request) {
	devices, err := a.accounts.ListDevices(r.Context(), session(r).UserID)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"devices": devices})
}

// getDevice shows one device. Spec: GET /_matrix/client/v3/devices/{deviceId}.
func (a *API) getDevice(w http.ResponseWriter, r *http.Request) {
	d, err := a.accounts.GetDevice(r.Context(), session(r).UserID, pathParam(r, "deviceId"))
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, d)
}

type putDeviceBody struct {
	DisplayName *string `json:"display_name"`
}

// putDevice renames a device. Creating devices is for application services
// only, which Chappe does not have, so an unknown device is 404.
// Spec: PUT /_matrix/client/v3/devices/{deviceId}.
func (a *API) putDevice(w http.ResponseWriter, r *http.Request) {
	var body putDeviceBody
	if err := a.decode(r, false, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if err := a.accounts.RenameDevice(r.Context(), session(r).UserID, pathParam(r, "deviceId"), body.DisplayName); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
}

type deleteDeviceBody struct {
	Auth *accounts.AuthDict `json:"auth"`
}

// deleteDevice deletes one device after UIA.
// Spec: DELETE /_matrix/client/v3/devices/{deviceId}.
func (a *API) deleteDevice(w http.ResponseWriter, r *http.Request) {
	var body deleteDeviceBody
	if err := a.decode(r, true, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	deviceID := pathParam(r, "deviceId")
	if _, err := a.accounts.GetDevice(r.Context(), session(r).UserID, deviceID); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	a.deleteDevicesAfterUIA(w, r, []string{deviceID}, body.Auth)
}

type deleteDevicesBody struct {
	Auth    *accounts.AuthDict `json:"auth"`
	Devices []string           `json:"devices"`
}

// deleteDevices deletes several devices after UIA.
// Spec: POST /_matrix/client/v3/delete_devices.
func (a *API) deleteDevices(w http.ResponseWriter, r *http.Request) {
	var body deleteDevicesBody
	if err := a.decode(r, false, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if body.Devices == nil {
		mxhttp.WriteError(w, r, mxerr.New(mxerr.BadJSON, "devices is required"))
		return
	}
	a.deleteDevicesAfterUIA(w, r, body.Devices, body.Auth)
}

// deleteDevicesAfterUIA binds the UIA session to the exact set of devices, so
// a session opened to delete one device cannot delete others.
func (a *API) deleteDevicesAfterUIA(w http.ResponseWriter, r *http.Request, ids []string, auth *accounts.AuthDict) {
	sorted := append([]string(nil), ids...)
	sort.Strings(sorted)
	sess := session(r)
	op := accounts.Operation{Name: "delete devices " + strings.Join(sorted, ","), UserID: sess.UserID, Flows: passwordFlows}
	done, err := a.accounts.Authorize(r.Context(), op, auth)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if err := a.accounts.DeleteDevices(r.Context(), sess.UserID, ids); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	a.devicesDeleted(r, sess.UserID)
	_ = a.accounts.FinishUIA(r.Context(), done.SessionID)
	mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
}
