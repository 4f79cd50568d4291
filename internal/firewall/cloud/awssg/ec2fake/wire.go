package ec2fake

// The fake's side of EC2's Query protocol responses: request IDs, the XML
// error document and the XML shapes of the calls it implements, with the
// element names the SDK's deserializers read.

import (
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// requestID returns a new request ID; it needs no lock.
func (s *Server) requestID() string {
	return fmt.Sprintf("0ec2fa4e-0000-4000-8000-%012x", s.lastReq.Add(1))
}

func (s *Server) writeError(w http.ResponseWriter, e *apiError) {
	doc := errorResponse{RequestID: s.requestID()}
	doc.Errors = append(doc.Errors, xmlError{Code: e.code, Message: e.message})
	out, err := xml.Marshal(doc)
	if err != nil {
		panic("ec2fake: encoding an error: " + err.Error())
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	if e.retryAfter != "" {
		w.Header().Set("Retry-After", e.retryAfter)
	}
	w.WriteHeader(e.status)
	_, _ = io.WriteString(w, xml.Header)
	_, _ = w.Write(out)
}

// The XML documents, with EC2's element names.

const xmlns = "http://ec2.amazonaws.com/doc/2016-11-15/"

type errorResponse struct {
	XMLName   xml.Name   `xml:"Response"`
	Errors    []xmlError `xml:"Errors>Error"`
	RequestID string     `xml:"RequestID"`
}

type xmlError struct {
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

// response is every successful answer: the element named after the
// action, with the parts that action has.
type response struct {
	XMLName      xml.Name
	Xmlns        string           `xml:"xmlns,attr"`
	RequestID    string           `xml:"requestId"`
	Return       bool             `xml:"return,omitempty"`
	Groups       []xmlGroup       `xml:"securityGroupInfo>item,omitempty"`
	Reservations []xmlReservation `xml:"reservationSet>item,omitempty"`
	Rules        []xmlRule        `xml:"securityGroupRuleSet>item,omitempty"`
	Revoked      []xmlRule        `xml:"revokedSecurityGroupRuleSet>item,omitempty"`
	NextToken    string           `xml:"nextToken,omitempty"`
}

func (s *Server) newResponse(action string) *response {
	return &response{XMLName: xml.Name{Local: action + "Response"}, Xmlns: xmlns, RequestID: s.requestID()}
}

type xmlGroup struct {
	OwnerID     string `xml:"ownerId"`
	GroupID     string `xml:"groupId"`
	GroupName   string `xml:"groupName"`
	Description string `xml:"groupDescription"`
	VpcID       string `xml:"vpcId"`
}

type xmlReservation struct {
	ReservationID string        `xml:"reservationId"`
	OwnerID       string        `xml:"ownerId"`
	Instances     []xmlInstance `xml:"instancesSet>item"`
}

type xmlInstance struct {
	InstanceID string        `xml:"instanceId"`
	Groups     []xmlGroupRef `xml:"groupSet>item"`
}

type xmlGroupRef struct {
	GroupID   string `xml:"groupId"`
	GroupName string `xml:"groupName"`
}

type xmlRule struct {
	ID          string `xml:"securityGroupRuleId"`
	GroupID     string `xml:"groupId"`
	OwnerID     string `xml:"groupOwnerId"`
	IsEgress    bool   `xml:"isEgress"`
	Protocol    string `xml:"ipProtocol"`
	FromPort    int    `xml:"fromPort"`
	ToPort      int    `xml:"toPort"`
	CidrIPv4    string `xml:"cidrIpv4,omitempty"`
	CidrIPv6    string `xml:"cidrIpv6,omitempty"`
	Description string `xml:"description,omitempty"`
}

func toXML(r *rule) xmlRule {
	x := xmlRule{ID: r.ID, GroupID: r.group, OwnerID: ownerID, IsEgress: r.egress, Protocol: r.Protocol,
		FromPort: r.FromPort, ToPort: r.ToPort, Description: r.Description}
	if strings.Contains(r.CIDR, ":") {
		x.CidrIPv6 = r.CIDR
	} else {
		x.CidrIPv4 = r.CIDR
	}
	return x
}
