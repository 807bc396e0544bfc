package gateway

import (
	"context"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The demo tools: plain MCP tools that know nothing of cpex.

type echoInput struct {
	Text string `json:"text" jsonschema:"the text to send back"`
}

type lookupInput struct {
	ID string `json:"id" jsonschema:"the customer's id"`
}

// Customer is the record lookup_customer returns: it holds PII.
type Customer struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Email string `json:"email"`
	Phone string `json:"phone"`
	Plan  string `json:"plan"`
}

// AddTools adds echo, lookup_customer and get_credentials to server.
func AddTools(server *mcp.Server) {
	mcp.AddTool(server, &mcp.Tool{Name: "echo", Description: "Returns its text argument."},
		func(_ context.Context, _ *mcp.CallToolRequest, in echoInput) (*mcp.CallToolResult, any, error) {
			return text(in.Text), nil, nil
		})
	mcp.AddTool(server, &mcp.Tool{Name: "lookup_customer", Description: "Returns a customer's record."},
		func(_ context.Context, _ *mcp.CallToolRequest, in lookupInput) (*mcp.CallToolResult, Customer, error) {
			// The SDK fills the result: the record as structured content and as JSON text.
			return nil, Customer{ID: in.ID, Name: "Jane Doe", Email: "jane.doe@example.com", Phone: "415-555-0132", Plan: "gold"}, nil
		})
	mcp.AddTool(server, &mcp.Tool{Name: "get_credentials", Description: "Returns credentials (that must never leave the gateway)."},
		func(_ context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			return text("aws_access_key_id = AKIAIOSFODNN7EXAMPLE"), nil, nil
		})
}

func text(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}
