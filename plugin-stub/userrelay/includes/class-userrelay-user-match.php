<?php
/**
 * Matching: which local user a delivered event is about. By match.user_id first (the relay
 * knows the pairing), else by email, or by login when the link matches by login or the user
 * has no email; then the userrelay_match_user filter may choose another (UserRelay_Developer_Hooks).
 * A match is only found here: UserRelay_Delivery_Checks then checks it as any match (a member
 * of this site, not privileged). Nothing here writes.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Finds the local user of a delivered event.
 */
final class UserRelay_User_Match {

	/**
	 * The local user: by match.user_id first, else by email or login as match.by says, then as
	 * the userrelay_match_user filter says.
	 *
	 * @param array $data  The event's user.
	 * @param array $match The event's match.
	 */
	public static function find( array $data, array $match ): ?WP_User {
		$user = isset( $match['user_id'] ) && is_numeric( $match['user_id'] ) ? get_userdata( (int) $match['user_id'] ) : false;
		if ( ! $user ) {
			// A user without an email is matched by login, whatever the link says.
			$user = self::by_login( $data, $match ) ? get_user_by( 'login', $data['login'] ) : get_user_by( 'email', $data['email'] );
		}
		// A developer's choice is checked as any match is: member here, not privileged.
		return UserRelay_Developer_Hooks::match( $user ? $user : null, $data, $match );
	}

	/**
	 * Whether a delivered user is matched by login: as the link says, or having no email.
	 *
	 * @param array $data  The event's user.
	 * @param array $match The event's match.
	 */
	public static function by_login( array $data, array $match ): bool {
		return '' === $data['email'] || ( isset( $match['by'] ) && 'login' === $match['by'] );
	}
}
