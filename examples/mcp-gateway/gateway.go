// Package gateway is an MCP server whose tool calls pass through cpex plugins.
//
// Every tools/call runs tool_pre_invoke over the tool's name and arguments (a plugin
// may deny the call or rewrite the arguments), then the tool, then tool_post_invoke
// over the tool's result (a plugin may deny it or rewrite it). The plugins are
// configured in py-cpex's own format (plugins.yaml): published py-cpex plugins run
// as they are, in this process.
//
// The gate is an MCP middleware (Middleware), so it covers every tool of the server,
// however the tool was added; NewServer builds a server with three demo tools behind
// it.
package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/json"
	"fmt"

	cpex "github.com/cpex-dev/cpex/sdk-go"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// ServerName names the gateway to MCP clients and, as server_id, to the plugins.
const ServerName = "cpex-mcp-gateway"

// Plugins is plugins.yaml, the gateway's plugin config, embedded in the binary.
//
//go:embed plugins.yaml
var Plugins string

// StartPlugins creates and initializes the plugin manager: from configFile, a
// plugin config file (py-cpex's format or cpex's), or from the embedded Plugins
// when configFile is "". Shut it down when the server is done.
func StartPlugins(configFile string) (*cpex.PluginManager, error) {
	m, err := cpex.NewPluginManagerDefault()
	if err != nil {
		return nil, err
	}
	if configFile != "" {
		err = m.LoadConfigFile(configFile)
	} else {
		err = m.LoadConfig(Plugins)
	}
	if err == nil {
		err = m.Initialize()
	}
	if err != nil {
		_ = m.Shutdown()
		return nil, err
	}
	return m, nil
}

// NewServer returns the gateway: an MCP server with the demo tools (AddTools), its
// tool calls gated by the plugins of m.
func NewServer(m *cpex.PluginManager) *mcp.Server {
	server := mcp.NewServer(&mcp.Implementation{Name: ServerName, Version: "v0.1.0"}, nil)
	AddTools(server)
	server.AddReceivingMiddleware(Middleware(m))
	return server
}

// Middleware passes every tools/call through the plugins of m; other methods go
// straight on.
//
// A plugin's deny becomes a tool error, a CallToolResult with IsError set and the
// violation (plugin, code, reason) as its text: the MCP spec asks servers to report
// errors of a call inside the result, so that the model sees them and can
// self-correct, and the SDK does the same with an error a tool handler returns.
// When the plugin asked for an MCP error code (py-cpex's mcp_error_code), the deny
// becomes that JSON-RPC error instead, as the SDK does with a *jsonrpc.Error a tool
// handler returns. A failure of the plugins themselves (a plugin failing under
// on_error: fail, a timeout) fails the call closed, as a JSON-RPC error.
func Middleware(m *cpex.PluginManager) mcp.Middleware {
	return func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if call, ok := req.(*mcp.CallToolRequest); ok && method == "tools/call" {
				return callTool(ctx, m, call, next)
			}
			return next(ctx, method, req)
		}
	}
}

func callTool(ctx context.Context, m *cpex.PluginManager, req *mcp.CallToolRequest, next mcp.MethodHandler) (mcp.Result, error) {
	name := req.Params.Name
	args := map[string]any{}
	if err := decodeJSON(req.Params.Arguments, &args); err != nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("tool %q: arguments: %v", name, err)}
	}
	opts := cpex.InvokeOptions{
		Request: requestContext(req),
		// cpex's own plugins route and match conditions on the entity.
		Extensions: &cpex.Extensions{Meta: &cpex.MetaExtension{EntityType: "tool", EntityName: name}},
	}

	// 1. tool_pre_invoke: the plugins see the call's name and arguments.
	pre, table, bg, err := cpex.InvokeWith(ctx, m, "tool_pre_invoke", cpex.PayloadGeneric,
		cpex.ToolPreInvokePayload{Name: name, Args: args}, opts)
	if err != nil {
		return nil, fmt.Errorf("tool %q: tool_pre_invoke: %w", name, err)
	}
	defer table.Close() // a no-op once tool_post_invoke consumed it
	defer bg.Close()
	if pre.IsDenied() {
		return denied(name, "tool_pre_invoke", pre.Violation)
	}
	if p := pre.ModifiedPayload; p != nil { // a plugin rewrote the arguments
		if p.Args == nil {
			p.Args = map[string]any{} // all of them removed
		}
		if req.Params.Arguments, err = json.Marshal(p.Args); err != nil {
			return nil, fmt.Errorf("tool %q: modified arguments: %w", name, err)
		}
	}

	// 2. The tool.
	out, err := next(ctx, "tools/call", req)
	if err != nil {
		return nil, err // a protocol error (an unknown tool, ...): nothing to inspect
	}
	result, ok := out.(*mcp.CallToolResult)
	if !ok {
		return nil, fmt.Errorf("tool %q: unexpected result %T", name, out)
	}

	// 3. tool_post_invoke: the plugins see the result as plain data, in the same
	// request (the context table carries what they kept from tool_pre_invoke).
	plain := map[string]any{}
	if err := remarshal(result, &plain); err != nil {
		return nil, fmt.Errorf("tool %q: result: %w", name, err)
	}
	opts.Context = table
	post, nextTable, postBg, err := cpex.InvokeWith(ctx, m, "tool_post_invoke", cpex.PayloadGeneric,
		cpex.ToolPostInvokePayload{Name: name, Result: plain}, opts)
	if err != nil {
		return nil, fmt.Errorf("tool %q: tool_post_invoke: %w", name, err)
	}
	_ = nextTable.Close() // the request ends here
	defer postBg.Close()
	if post.IsDenied() {
		return denied(name, "tool_post_invoke", post.Violation)
	}
	if p := post.ModifiedPayload; p != nil { // a plugin rewrote the result
		result = &mcp.CallToolResult{}
		if err := remarshal(p.Result, result); err != nil {
			return nil, fmt.Errorf("tool %q: modified result: %w", name, err)
		}
	}
	return result, nil
}

// requestContext is the global context of one tool call, as the plugins read it.
func requestContext(req *mcp.CallToolRequest) *cpex.GlobalContext {
	gc := &cpex.GlobalContext{
		RequestID: rand.Text(), // one per call: its pre and post hooks share it
		ServerID:  ServerName,
		Metadata:  map[string]any{"mcp_method": "tools/call"},
	}
	if req.Session != nil && req.Session.ID() != "" {
		gc.Metadata["session_id"] = req.Session.ID()
	}
	switch {
	case req.Extra != nil && req.Extra.TokenInfo != nil && req.Extra.TokenInfo.UserID != "":
		// Streamable HTTP behind auth.RequireBearerToken: the verified user.
		gc.User = req.Extra.TokenInfo.UserID
	case req.Params.Meta["user"] != nil:
		// What the client says in the call's _meta: unverified, fine for a demo over
		// stdio; a real gateway takes identity from its authentication only.
		gc.User = req.Params.Meta["user"]
	}
	return gc
}

// denied answers a call a plugin denied (see Middleware).
func denied(tool, hook string, v *cpex.PluginViolation) (mcp.Result, error) {
	if v == nil {
		v = &cpex.PluginViolation{Code: "DENIED", Reason: "denied by a plugin"}
	}
	text := fmt.Sprintf("tool %q denied in %s by plugin %s: %s: %s", tool, hook, v.PluginName, v.Code, v.Reason)
	if v.Description != "" {
		text += " (" + v.Description + ")"
	}
	if v.MCPErrorCode != nil {
		return nil, &jsonrpc.Error{Code: *v.MCPErrorCode, Message: text}
	}
	return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: text}}}, nil
}

// remarshal converts between the SDK's types and plain data through their JSON.
func remarshal(from, to any) error {
	data, err := json.Marshal(from)
	if err != nil {
		return err
	}
	return decodeJSON(data, to)
}

// decodeJSON decodes data into v, keeping integers integers: plugins see 3, not 3.0,
// and give back 3. Empty data or null leaves v as it is.
func decodeJSON(data []byte, v any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if p, ok := v.(*map[string]any); ok {
		*p = numbers(*p).(map[string]any)
	}
	return nil
}

// numbers replaces the json.Numbers in v by int64 when they are integers, else
// float64.
func numbers(v any) any {
	switch v := v.(type) {
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		f, _ := v.Float64()
		return f
	case map[string]any:
		for k, e := range v {
			v[k] = numbers(e)
		}
	case []any:
		for i, e := range v {
			v[i] = numbers(e)
		}
	}
	return v
}
