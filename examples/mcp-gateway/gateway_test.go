package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	gateway "github.com/cpex-dev/cpex/examples/mcp-gateway"
	cpex "github.com/cpex-dev/cpex/sdk-go"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// connect serves server over the SDK's in-memory transport and returns a client
// session of the SDK's own client.
func connect(t *testing.T, server *mcp.Server) *mcp.ClientSession {
	t.Helper()
	ctx := context.Background()
	serverTransport, clientTransport := mcp.NewInMemoryTransports()
	ss, err := server.Connect(ctx, serverTransport, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := mcp.NewClient(&mcp.Implementation{Name: "gateway-test", Version: "v0.0.1"}, nil)
	cs, err := client.Connect(ctx, clientTransport, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.Close()
		_ = ss.Wait()
	})
	return cs
}

// gatewayServer is the gateway with its own plugins.yaml.
func gatewayServer(t *testing.T) *mcp.Server {
	t.Helper()
	m, err := gateway.StartPlugins("plugins.yaml")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return gateway.NewServer(m)
}

// gatewayWithPlugins connects to the gateway with its own plugins.yaml.
func gatewayWithPlugins(t *testing.T) *mcp.ClientSession {
	t.Helper()
	return connect(t, gatewayServer(t))
}

func call(t *testing.T, cs *mcp.ClientSession, params *mcp.CallToolParams) *mcp.CallToolResult {
	t.Helper()
	res, err := cs.CallTool(context.Background(), params)
	if err != nil {
		t.Fatalf("%s: %v", params.Name, err)
	}
	return res
}

// textOf is the text of a result's one text content.
func textOf(t *testing.T, res *mcp.CallToolResult) string {
	t.Helper()
	if len(res.Content) != 1 {
		t.Fatalf("content = %v; want one part", res.Content)
	}
	tc, ok := res.Content[0].(*mcp.TextContent)
	if !ok {
		t.Fatalf("content[0] = %T; want text", res.Content[0])
	}
	return tc.Text
}

func TestCleanCallPassesUntouched(t *testing.T) {
	cs := gatewayWithPlugins(t)
	const text = "Deploy build 1234 to staging at 10:00, then run the smoke tests."
	res := call(t, cs, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": text}})
	if res.IsError {
		t.Fatalf("error: %s", textOf(t, res))
	}
	if got := textOf(t, res); got != text {
		t.Fatalf("echo = %q; want %q", got, text)
	}
}

func TestPIIInArgumentsIsRedacted(t *testing.T) {
	cs := gatewayWithPlugins(t)
	res := call(t, cs, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "Write to john@example.com today"}})
	if res.IsError {
		t.Fatalf("error: %s", textOf(t, res))
	}
	if got := textOf(t, res); got != "Write to [REDACTED] today" {
		t.Fatalf("echo = %q; want the email redacted", got)
	}
}

// The tool itself gets the redacted arguments (tool_pre_invoke rewrote the call), the
// others as they were; the gate covers a tool added after NewServer too.
func TestToolGetsTheRedactedArguments(t *testing.T) {
	server := gatewayServer(t)
	type email struct {
		To    string `json:"to"`
		Count int    `json:"count"`
	}
	got := make(chan email, 1)
	mcp.AddTool(server, &mcp.Tool{Name: "send_email"},
		func(_ context.Context, _ *mcp.CallToolRequest, in email) (*mcp.CallToolResult, any, error) {
			got <- in
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "sent"}}}, nil, nil
		})
	res := call(t, connect(t, server), &mcp.CallToolParams{Name: "send_email", Arguments: map[string]any{"to": "john@example.com", "count": 3}})
	if res.IsError {
		t.Fatalf("error: %s", textOf(t, res))
	}
	if in := <-got; in != (email{To: "[REDACTED]", Count: 3}) {
		t.Fatalf("the tool got %+v", in)
	}
}

func TestPIIInResultsIsRedacted(t *testing.T) {
	cs := gatewayWithPlugins(t)
	res := call(t, cs, &mcp.CallToolParams{Name: "lookup_customer", Arguments: map[string]any{"id": "C-1001"}})
	if res.IsError {
		t.Fatalf("error: %s", textOf(t, res))
	}
	var record gateway.Customer
	if err := json.Unmarshal([]byte(textOf(t, res)), &record); err != nil {
		t.Fatal(err)
	}
	want := gateway.Customer{ID: "C-1001", Name: "Jane Doe", Email: "[REDACTED]", Phone: "[REDACTED]", Plan: "gold"}
	if record != want {
		t.Fatalf("record = %+v; want %+v", record, want)
	}
	structured, _ := json.Marshal(res.StructuredContent)
	if s := string(structured); strings.Contains(s, "jane.doe@example.com") || strings.Contains(s, "555-0132") {
		t.Fatalf("structured content leaks PII: %s", s)
	}
}

func TestSecretsInResultsAreDenied(t *testing.T) {
	cs := gatewayWithPlugins(t)
	res := call(t, cs, &mcp.CallToolParams{Name: "get_credentials", Arguments: map[string]any{}})
	if !res.IsError {
		t.Fatalf("not an error: %v", res.Content)
	}
	text := textOf(t, res)
	for _, want := range []string{"SECRETS_DETECTED", "plugin SecretsDetection", "tool_post_invoke"} {
		if !strings.Contains(text, want) {
			t.Errorf("error %q does not name %q", text, want)
		}
	}
	if strings.Contains(text, "AKIAIOSFODNN7EXAMPLE") {
		t.Fatalf("the error leaks the secret: %q", text)
	}
}

// A plugin's mcp_error_code turns its deny into that JSON-RPC error; the plugin read
// the user from the global context the gateway passed.
func TestDenyWithAnMCPErrorCode(t *testing.T) {
	dir, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	m, err := cpex.NewPluginManager(fmt.Sprintf(`
plugins:
  - name: "ToolBlocklist"
    kind: "tool_blocklist.ToolBlocklist"
    hooks: ["tool_pre_invoke"]
    mode: "enforce"
    config: {blocked: ["get_credentials"], mcp_error_code: -32001}
plugin_dirs: [%q]
`, dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	if err := m.Initialize(); err != nil {
		t.Fatal(err)
	}
	cs := connect(t, gateway.NewServer(m))
	_, err = cs.CallTool(context.Background(), &mcp.CallToolParams{
		Name: "get_credentials", Arguments: map[string]any{}, Meta: mcp.Meta{"user": "alice"},
	})
	var rpcErr *jsonrpc.Error
	if !errors.As(err, &rpcErr) || rpcErr.Code != -32001 {
		t.Fatalf("err = %v; want the JSON-RPC error -32001", err)
	}
	for _, want := range []string{"TOOL_BLOCKED", "plugin ToolBlocklist", "user alice"} {
		if !strings.Contains(rpcErr.Message, want) {
			t.Errorf("error %q does not name %q", rpcErr.Message, want)
		}
	}
	// Other tools pass.
	res := call(t, cs, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}})
	if res.IsError || textOf(t, res) != "hi" {
		t.Fatalf("echo = %v", res.Content)
	}
}
